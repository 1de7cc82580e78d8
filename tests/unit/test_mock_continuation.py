"""The simulated providers finishing a cut answer (``mock/continuation.py``), refusing what the
real APIs refuse (``mock/rules.py``), and the exact-answer Script fields (``mock/content.py``),
decided without sockets. Continuation bodies are built by the product's own
``relay.continuation.continuation_body`` from hand-made ``Cut``s, so these tests hold the mock
to the shapes the balancer really sends.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ccbalancer.dialects.openai.request import to_openai_request
from ccbalancer.mock import Script
from ccbalancer.mock.anthropic import AnthropicDialect
from ccbalancer.mock.continuation import Continuation, Mismatch, continued
from ccbalancer.mock.openai import OpenAIDialect
from ccbalancer.mock.plan import Plan, build_plan
from ccbalancer.mock.respond import plan_for
from ccbalancer.mock.rules import (
    NO_PREFILL,
    NO_TOOL_MESSAGE,
    NO_TOOL_RESULT,
    OPENAI_PREFILL,
    THINKING_FIRST,
    TRAILING_WHITESPACE,
    anthropic_refusal,
    openai_refusal,
)
from ccbalancer.mock.script import apply_fields
from ccbalancer.relay.continuation import PENDING_TOOL, RESUME_PROMPT, Cut, continuation_body

ANTHROPIC, OPENAI = AnthropicDialect(), OpenAIDialect()
OLD, NEW = "claude-sonnet-4-5", "claude-sonnet-4-6"  # takes a prefill / does not
PIECES = ["Hello", " from", " the", "  mock.", "\n\nSecond", " line."]
TEXT = "".join(PIECES)
LS = {"command": "ls", "description": "list"}
PWD = {"command": "pwd", "description": "where"}


def json(value: Any) -> str:
    return orjson.dumps(value).decode()


def text_and_tools(*inputs: dict[str, Any], text: str = TEXT) -> Script:
    tools = [{"type": "tool_use", "name": "Bash", "input": i} for i in inputs]
    return Script(content=json([{"type": "text", "text": text}, *tools]))


def request(prompt: str = "hi", model: str = OLD, **extra: Any) -> dict[str, Any]:
    body = {"model": model, "max_tokens": 100, "stream": True, **extra}
    body["messages"] = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
    return body


def mid_text(delivered: str, *blocks: dict[str, Any]) -> Cut:
    return Cut(blocks=list(blocks), open_kind="text", open_text=delivered)


def decided(script: Script, body: dict[str, Any], dialect: Any = ANTHROPIC) -> Plan | str:
    """What the mock answers ``body`` with, or its 400 message (``respond.plan_for``, as the
    server decides it)."""
    return plan_for(dialect, script, body, dialect.continuation(body))


def answer(script: Script, body: dict[str, Any], dialect: Any = ANTHROPIC) -> Plan:
    plan = decided(script, body, dialect)
    assert isinstance(plan, Plan), plan
    return plan


def shape(plan: Plan) -> list[tuple[str, str]]:
    return [
        (block.kind, block.joined if block.kind == "text" else block.name) for block in plan.blocks
    ]


def tool_inputs(plan: Plan) -> list[Any]:
    return [orjson.loads(block.joined) for block in plan.blocks if block.kind == "tool_use"]


# --- the exact-answer fields ------------------------------------------------------------------


def test_pieces_are_the_text_deltas_exactly() -> None:
    plan = build_plan(Script(pieces=json(PIECES), text="ignored"), None)
    (block,) = plan.blocks
    assert block.pieces == tuple(PIECES)
    assert plan.stop_reason == "end_turn"


def test_content_scripts_thinking_text_and_parallel_tool_calls() -> None:
    content = [
        {"type": "thinking", "thinking": "Let me see.", "signature": "sig-1"},
        {"type": "text", "pieces": ["Two", " calls:"]},
        {"type": "tool_use", "name": "Bash", "input": LS, "id": "toolu_given"},
        {"type": "tool_use", "name": "Bash", "input": PWD},
    ]
    plan = build_plan(Script(content=json(content), reply="tool_use", text="ignored"), None)

    kinds = [block.kind for block in plan.blocks]
    assert kinds == ["thinking", "text", "tool_use", "tool_use"]
    thinking, text, first, second = plan.blocks
    assert (thinking.joined, thinking.signature) == ("Let me see.", "sig-1")
    assert text.pieces == ("Two", " calls:")
    assert first.id == "toolu_given" and second.id.startswith("toolu_mock_")
    assert tool_inputs(plan) == [LS, PWD]
    assert plan.stop_reason == "tool_use"


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("pieces", "not json", "Script.pieces is not valid JSON"),
        ("pieces", '["a", 1]', "Script.pieces must be a JSON array of strings"),
        ("content", "[]", "Script.content must be a non-empty JSON array"),
        ("content", '[{"type": "image"}]', "Script.content[0] must be an object whose type"),
        ("content", '[{"type": "text"}]', "Script.content[0] needs 'text' or 'pieces'"),
        ("content", '[{"type": "text", "text": "ab", "pieces": ["a"]}]', "do not join"),
        ("content", '[{"type": "text", "txt": "a"}]', "Script.content[0]: unknown key(s) ['txt']"),
        ("content", '[{"type": "text", "text": "a"}, {"type": "tool_use", "input": {}}]',
         "Script.content[1]: a tool_use needs a non-empty 'name'"),
        ("content", '[{"type": "tool_use", "name": "Bash", "input": []}]', "an 'input' object"),
        ("resume_repeat", -1, "Script.resume_repeat must be 0 or more"),
    ],
)  # fmt: skip
def test_bad_values_are_errors_naming_the_field(field: str, value: Any, says: str) -> None:
    with pytest.raises(ValueError) as error:
        apply_fields(Script(), {field: value})
    assert says in str(error.value)


# --- prefill: exactly from where the delivered text stops -------------------------------------


@pytest.mark.parametrize("cut", range(1, len(TEXT)))
def test_prefill_continues_exactly_from_any_character(cut: int) -> None:
    """Every cut, inside a word, after the double space, after the newlines: the trimmed
    prefill and the continuation join to the canned text, whitespace included."""
    script = Script(pieces=json(PIECES))
    body, stripped = continuation_body(request(), mid_text(TEXT[:cut]), "prefill")
    assert anthropic_refusal(body) is None
    (block,) = answer(script, body).blocks
    sent = body["messages"][-1]["content"][-1]["text"]
    assert sent + block.joined == TEXT
    assert block.joined.startswith(stripped)
    # the rest of the piece the cut fell in, then the script's own pieces
    assert list(block.pieces[1:]) == PIECES[len(PIECES) - len(block.pieces) + 1 :]


def test_prefill_at_the_end_of_the_text_goes_on_with_the_tool_call() -> None:
    script = text_and_tools(LS)
    cut = Cut(blocks=[{"type": "text", "text": TEXT}])
    plan = answer(script, continuation_body(request(), cut, "prefill")[0])
    assert shape(plan) == [("tool_use", "Bash")]
    assert tool_inputs(plan) == [LS]
    assert plan.stop_reason == "tool_use"


def test_after_the_first_of_two_parallel_calls_only_the_second_comes() -> None:
    script = text_and_tools(LS, PWD)
    tool = {"type": "tool_use", "id": "toolu_x", "name": "Bash", "input": LS}
    cut = Cut(blocks=[{"type": "text", "text": TEXT}, tool])
    for mode in ("prefill", "resume"):
        plan = answer(script, continuation_body(request(), cut, mode)[0])
        assert tool_inputs(plan) == [PWD], mode
        assert [block.kind for block in plan.blocks] == ["tool_use"]


def test_after_the_whole_answer_the_continuation_is_empty_with_the_stop_reason() -> None:
    script = text_and_tools(LS)
    tool = {"type": "tool_use", "id": "toolu_x", "name": "Bash", "input": LS}
    body, _ = continuation_body(
        request(), Cut(blocks=[{"type": "text", "text": TEXT}, tool]), "prefill"
    )
    plan = answer(script, body)
    assert plan.blocks == ()
    assert plan.stop_reason == "tool_use"


def test_thinking_is_never_given_back() -> None:
    content = [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "pieces": PIECES}]
    script = Script(content=json(content))
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "s"}
    cut = Cut(blocks=[thinking], open_kind="text", open_text="Hello fr", thinking=True)
    for mode in ("prefill", "resume"):
        plan = answer(script, continuation_body(request(), cut, mode)[0])
        assert [block.kind for block in plan.blocks] == ["text"], mode


def test_a_client_prefill_is_continued_as_part_of_the_answer() -> None:
    """The client's own trailing assistant message is where the canned answer starts; the
    balancer extends it with what it delivered."""
    script = Script(pieces=json(['{"a"', ": 1}"]))
    body = request()
    body["messages"].append({"role": "assistant", "content": "{"})
    assert shape(answer(script, body)) == [("text", '"a": 1}')]
    cut = mid_text('"a"')
    continuation, _ = continuation_body(body, cut, "prefill")
    assert shape(answer(script, continuation)) == [("text", ": 1}")]


# --- resume: the tail said again, then the rest -----------------------------------------------


@pytest.mark.parametrize(
    ("delivered", "repeat", "expected"),
    [
        ("Hello from the  mo", 3, "from the  mock.\n\nSecond line."),
        ("Hello from the  mo", 0, "ck.\n\nSecond line."),
        ("Hello fr", 5, "Hello from the  mock.\n\nSecond line."),
        ("Hello from the  mock.\n\n", 2, "the  mock.\n\nSecond line."),
        ("Hello from the ", 1, "the  mock.\n\nSecond line."),
    ],
)
def test_resume_repeats_the_last_words_then_goes_on(
    delivered: str, repeat: int, expected: str
) -> None:
    script = Script(pieces=json(PIECES), resume_repeat=repeat)
    body, stripped = continuation_body(request(model=NEW), mid_text(delivered), "resume")
    assert stripped == ""
    assert anthropic_refusal(body) is None
    (block,) = answer(script, body).blocks
    assert block.joined == expected
    said_again = len(delivered) + len(expected) - len(TEXT)  # what a splice must remove
    assert delivered[len(delivered) - said_again :] == expected[:said_again]
    assert delivered[: len(delivered) - said_again] + expected == TEXT


def test_resume_after_text_and_tool_answers_the_pending_call_and_goes_on() -> None:
    script = text_and_tools(LS, PWD)
    tool = {"type": "tool_use", "id": "toolu_x", "name": "Bash", "input": LS}
    body, _ = continuation_body(
        request(model=NEW), Cut(blocks=[{"type": "text", "text": TEXT}, tool]), "resume"
    )
    assert body["messages"][-1]["content"][0]["content"] == PENDING_TOOL
    assert anthropic_refusal(body) is None
    assert tool_inputs(answer(script, body)) == [PWD]


# --- recognition: which request is a continuation, and of what ---------------------------------


def test_the_directive_of_a_resume_is_read_from_the_original_prompt() -> None:
    prompt = '<<mock {"text": "scripted"}>> go'
    body, _ = continuation_body(request(prompt, model=NEW), mid_text("scr"), "resume")
    continuation = ANTHROPIC.continuation(body)
    assert continuation is not None and continuation.mode == "resume"
    assert ANTHROPIC.directive_text(continuation.original) == prompt
    assert continuation.delivered == ({"type": "text", "text": "scr"},)


def test_the_tool_result_of_the_continued_request_is_the_clients_not_the_pending_one() -> None:
    """A cut in the answer to a tool result: the plan is still the answer to that result."""
    body = request(model=NEW)
    called = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": LS}
    body["messages"] += [
        {"role": "assistant", "content": [called]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt"}],
        },
    ]
    script = Script(reply="tool_then_text")
    continuation, _ = continuation_body(body, mid_text("The tool"), "resume")
    (block,) = answer(script, continuation).blocks
    assert block.joined.endswith("returned: a.txt")


def test_a_demo_providers_tool_answer_is_continued_from_the_original_turn() -> None:
    """``Script.act`` decides from the request as first asked, not from the resume turn."""
    body = request(model=NEW, tools=[{"name": "Bash", "input_schema": {"type": "object"}}])
    called = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt\nb.txt\n"}
    body["messages"] += [
        {"role": "assistant", "content": [called]},
        {"role": "user", "content": [result]},
    ]
    script = Script(act=True)
    (whole,) = answer(script, body).blocks
    assert whole.joined.startswith("I ran `ls` in the working directory: 2 entries: a.txt, b.txt.")

    continuation, _ = continuation_body(body, mid_text("I ran `ls` in the"), "resume")
    (rest,) = answer(script, continuation).blocks
    assert rest.joined == whole.joined[len("I ran ") :]  # "`ls` in the" said again


def test_ordinary_requests_are_no_continuation() -> None:
    body = request()
    assert ANTHROPIC.continuation(body) is None
    body["messages"][0]["content"][0]["text"] = f"please: {RESUME_PROMPT}"
    assert ANTHROPIC.continuation(body) is None  # a user quoting it is not a resume turn


def test_openai_resume_is_recognised_as_the_dialect_translates_it() -> None:
    script = text_and_tools(LS, PWD, text="Two calls:")
    tool = {"type": "tool_use", "id": "toolu_x", "name": "Bash", "input": LS}
    body, _ = continuation_body(
        request(), Cut(blocks=[{"type": "text", "text": "Two calls:"}, tool]), "resume"
    )
    translated = to_openai_request(body, "gpt-test")
    assert [m["role"] for m in translated["messages"]][-3:] == ["assistant", "tool", "user"]
    assert openai_refusal(translated) is None
    continuation = OPENAI.continuation(translated)
    assert continuation is not None
    assert continuation.delivered == (
        {"type": "text", "text": "Two calls:"},
        {"type": "tool_use", "name": "Bash", "input": LS},
    )
    assert tool_inputs(answer(script, translated, OPENAI)) == [PWD]


# --- content that is not this provider's answer -----------------------------------------------


def tool(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_t", "name": name, "input": arguments}


WHOLE = {"type": "text", "text": TEXT}


@pytest.mark.parametrize(
    "cut",
    [
        mid_text("Hello form"),  # a typo: not a prefix
        mid_text("Goodbye"),
        Cut(blocks=[WHOLE, tool("Bash", PWD)]),  # another input
        Cut(blocks=[WHOLE, tool("Read", LS)]),  # another tool
        Cut(blocks=[{"type": "text", "text": "Hello"}, tool("Bash", LS)]),  # text not finished
        Cut(blocks=[WHOLE, tool("Bash", LS)], open_kind="text", open_text="More"),  # past the end
    ],
)
def test_a_continuation_that_is_not_the_canned_answer_is_refused(cut: Cut) -> None:
    script = text_and_tools(LS)
    for mode in ("prefill", "resume"):
        body, _ = continuation_body(request(), cut, mode)
        refused = decided(script, body)
        assert isinstance(refused, str)
        assert refused.startswith(
            "the continuation does not match what this provider would have said: delivered block"
        )


def test_a_mismatch_says_where() -> None:
    plan = build_plan(Script(pieces=json(PIECES)), None)
    delivered = ({"type": "text", "text": "Hello form"},)
    with pytest.raises(Mismatch) as error:
        continued(plan, Continuation("prefill", delivered, {}), 3)
    assert "delivered block 1 (text 'Hello form')" in str(error.value)


# --- refusals, as the real APIs word them -----------------------------------------------------


@pytest.mark.parametrize(
    "model", [NEW, "claude-opus-4-6", "claude-opus-5", "claude-sonnet-5-1", "gpt-4o", ""]
)
def test_prefill_to_a_model_that_does_not_take_it_is_refused(model: str) -> None:
    body, _ = continuation_body(request(model=model), mid_text("Hello"), "prefill")
    assert anthropic_refusal(body) == NO_PREFILL
    assert NO_PREFILL == (
        "This model does not support assistant message prefill. The conversation must end "
        "with a user message."
    )


@pytest.mark.parametrize(
    "thinking", [{"type": "enabled", "budget_tokens": 2000}, {"type": "adaptive"}]
)
def test_prefill_with_thinking_on_is_refused(thinking: dict[str, Any]) -> None:
    body = request(thinking=thinking)
    body["messages"].append({"role": "assistant", "content": [{"type": "text", "text": "Hello"}]})
    refused = anthropic_refusal(body)
    assert refused == THINKING_FIRST.format(index=1, found="text")
    assert refused is not None and refused.startswith(
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `text`. "
        "When `thinking` is enabled, a final `assistant` message must start with a thinking block"
    )
    body["thinking"] = {"type": "disabled"}
    assert anthropic_refusal(body) is None


def test_the_continuation_body_turns_thinking_off_so_its_prefill_is_taken() -> None:
    body, _ = continuation_body(
        request(thinking={"type": "enabled", "budget_tokens": 2000}), mid_text("Hello"), "prefill"
    )
    assert anthropic_refusal(body) is None


@pytest.mark.parametrize("ending", [" ", "\n", "\t", "  \n\n"])
def test_a_final_assistant_text_ending_in_whitespace_is_refused(ending: str) -> None:
    body = request()
    body["messages"].append(
        {"role": "assistant", "content": [{"type": "text", "text": "Hello" + ending}]}
    )
    assert (
        anthropic_refusal(body)
        == TRAILING_WHITESPACE
        == ("messages: final assistant content cannot end with trailing whitespace")
    )
    body["messages"][-1]["content"] = "Hello" + ending
    assert anthropic_refusal(body) == TRAILING_WHITESPACE


def test_a_tool_call_without_its_result_in_the_next_message_is_refused() -> None:
    tools = [{"type": "tool_use", "id": f"toolu_{n}", "name": "Bash", "input": LS} for n in (1, 2)]
    cut = Cut(blocks=[{"type": "text", "text": TEXT}, *tools])
    body, _ = continuation_body(request(model=NEW), cut, "resume")
    assert anthropic_refusal(body) is None
    body["messages"][-1]["content"] = [
        body["messages"][-1]["content"][0],
        {"type": "text", "text": RESUME_PROMPT},
    ]
    assert anthropic_refusal(body) == NO_TOOL_RESULT.format(index=1, ids="toolu_2")
    body["messages"][-1]["content"] = [{"type": "text", "text": RESUME_PROMPT}]
    assert anthropic_refusal(body) == (
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: "
        "toolu_1, toolu_2. Each `tool_use` block must have a corresponding `tool_result` block in "
        "the next message."
    )


def test_openai_refuses_a_final_assistant_message_and_unanswered_tool_calls() -> None:
    body, _ = continuation_body(request(), mid_text("Hello"), "prefill")
    assert openai_refusal(to_openai_request(body, "gpt-test")) == OPENAI_PREFILL

    tool = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": LS}
    body, _ = continuation_body(request(), Cut(blocks=[tool]), "resume")
    translated = to_openai_request(body, "gpt-test")
    assert openai_refusal(translated) is None
    translated["messages"] = [m for m in translated["messages"] if m["role"] != "tool"]
    assert openai_refusal(translated) == NO_TOOL_MESSAGE.format(ids="toolu_1")
