"""The demo providers' tool use (``mock/act.py``), decided without sockets from a ``Turn``."""

from __future__ import annotations

import orjson
import pytest

from ccbalancer.mock.act import Turn, act, user_words, working_directory
from ccbalancer.mock.plan import Block

TOOLS = frozenset({"Bash", "Read", "Edit", "Write"})
LISTING = "notes.txt\nsrc\nREADME.md\n"


def call_of(blocks: tuple[Block, ...] | None) -> tuple[str, dict[str, object]]:
    assert blocks is not None
    (block,) = blocks
    assert block.kind == "tool_use" and block.id.startswith("toolu_mock_")
    assert block.pieces[0] == ""  # opens with an empty fragment, as the real API often does
    return block.name, orjson.loads(block.joined)


def text_of(blocks: tuple[Block, ...] | None) -> str:
    assert blocks is not None
    (block,) = blocks
    assert block.kind == "text"
    return block.joined


@pytest.mark.parametrize(
    "words", ["list the files here", "What files are in this folder?", "run ls", "show me"]
)
def test_words_asking_for_an_action_get_bash_ls(words: str) -> None:
    assert call_of(act(Turn(words=words, tools=TOOLS))) == (
        "Bash",
        {"command": "ls", "description": "List the files here"},
    )


def test_reading_a_file_seen_in_an_earlier_result_uses_read_with_its_absolute_path() -> None:
    turn = Turn(words="read README.md please", tools=TOOLS, results=(LISTING,), cwd="/w/proj")
    assert call_of(act(turn)) == ("Read", {"file_path": "/w/proj/README.md"})
    # not named: the first file (with an extension) the listing showed
    turn = Turn(words="open one of them", tools=TOOLS, results=(LISTING,), cwd="/w/proj/")
    assert call_of(act(turn)) == ("Read", {"file_path": "/w/proj/notes.txt"})


def test_without_a_working_directory_or_read_tool_the_file_is_shown_with_bash() -> None:
    turn = Turn(words="show notes.txt", tools=frozenset({"Bash"}), results=(LISTING,))
    assert call_of(act(turn)) == (
        "Bash",
        {"command": "cat notes.txt", "description": "Show notes.txt"},
    )


@pytest.mark.parametrize(
    "turn",
    [
        Turn(words="list the files here", tools=frozenset()),  # no tools offered (title, quota)
        Turn(words="Reply with exactly: PONG", tools=TOOLS),  # nothing to do with a tool
        Turn(words="list files", tools=frozenset({"WebSearch"})),  # no tool that fits
    ],
)
def test_turns_a_tool_cannot_serve_fall_through_to_the_script(turn: Turn) -> None:
    assert act(turn) is None


def test_the_answer_after_ls_names_what_it_listed() -> None:
    turn = Turn(
        tools=TOOLS,
        tool_result=LISTING,
        called=("Bash", {"command": "ls"}),
        results=(LISTING,),
        cwd="/w/proj",
    )
    answer = text_of(act(turn))
    assert "I ran `ls` in /w/proj: 3 entries: notes.txt, src, README.md." in answer
    assert "simulated provider" in answer


def test_the_answer_after_read_quotes_the_first_line_without_line_numbers() -> None:
    result = "     1\t# Title\n     2\tbody\n     3\t\n<system-reminder>x\ny</system-reminder>"
    turn = Turn(tool_result=result, called=("Read", {"file_path": "/w/proj/README.md"}))
    assert "I read README.md: 2 lines, starting with: # Title" in text_of(act(turn))


def test_system_reminders_are_not_the_users_words() -> None:
    text = "<system-reminder>\nlist of things, read CLAUDE.md\n</system-reminder>\nReply: PONG"
    assert user_words(text) == "Reply: PONG"
    assert act(Turn(words=user_words(text), tools=TOOLS)) is None


def test_working_directory_comes_from_claude_codes_environment_section() -> None:
    prompt = "# Environment\n - Primary working directory: /home/u/proj\n - Platform: linux"
    assert working_directory("no env here", prompt) == "/home/u/proj"
    assert working_directory("nothing") == ""


def test_a_file_named_in_the_first_prompt_is_read_without_a_listing() -> None:
    turn = Turn(words="read pyproject.toml", tools=TOOLS, cwd="/w/proj")
    assert call_of(act(turn)) == ("Read", {"file_path": "/w/proj/pyproject.toml"})
