"""What a demo provider does when Claude Code asks it to do something: it uses a tool.

With ``Script.act`` set, a request that offers tools and whose last user words ask for an
action is answered with a ``tool_use`` of one of the offered tools — ``Read`` of a file named
in an earlier tool result when the words ask to read or show one, else ``Bash`` running
``ls`` — and the request that brings the tool's result back gets a short text answer about it.
So a newcomer sees Claude Code's whole tool loop without knowing the ``<<mock>>`` directive
syntax. Whatever ``act`` does not handle falls through to the script's ordinary reply; the
dialects only extract a ``Turn`` from their wire format, the decision is made here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ccbalancer.mock.plan import Block, split_text, tool_block

_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)
_CWD = re.compile(r"Primary working directory: (\S+)")
_ACTION = re.compile(
    r"\b(list|ls|show|read|open|cat|run|look|check|find|files?|folder|directory|contents?)\b",
    re.IGNORECASE,
)
_READ = re.compile(r"\b(read|open|cat|show|view|print|contents?)\b", re.IGNORECASE)
_NAME = re.compile(r"^[\w@+-][\w.@+-]*$")  # one entry of ls's one-per-line output
_FILE = re.compile(r"[\w@+-][\w.@+/-]*\.\w+")  # a file name with an extension, in words
_LINE_NUMBER = re.compile(r"^\s*\d+(?:\t|→|$)")  # Read's `cat -n`-style prefix
_NOTE = " (A simulated provider of the ccbalancer demo wrote this answer.)"
_SHOWN = 8  # entries named in the answer to an ls


@dataclass(frozen=True, slots=True)
class Turn:
    """What ``act`` needs to know about one request, whatever its wire format."""

    words: str = ""  # the user's own words in the last user message, system reminders left out
    tools: frozenset[str] = frozenset()  # names of the tools the request offers
    tool_result: str | None = None  # what the last user turn sent back for a tool call
    called: tuple[str, dict[str, object]] | None = None  # the tool call that result answers
    results: tuple[str, ...] = field(default=())  # every tool result so far, oldest first
    cwd: str = ""  # Claude Code's primary working directory ("" when the request does not say)


def user_words(text: str) -> str:
    return _REMINDER.sub("", text).strip()


def working_directory(*texts: str) -> str:
    for text in texts:
        match = _CWD.search(text)
        if match:
            return match.group(1)
    return ""


def _entries(result: str) -> list[str]:
    return [line.strip() for line in result.splitlines() if _NAME.match(line.strip())]


def _files_seen(turn: Turn) -> list[str]:
    """Names listed by earlier tool results, files (with an extension) first."""
    names = list(dict.fromkeys(name for result in turn.results for name in _entries(result)))
    return [n for n in names if "." in n.strip(".")] + [n for n in names if "." not in n.strip(".")]


def _text(text: str) -> tuple[Block, ...]:
    return (Block("text", tuple(split_text(text + _NOTE, None))),)


def _answer(turn: Turn, result: str) -> tuple[Block, ...]:
    name, arguments = turn.called or ("", {})
    if name == "Bash" and str(arguments.get("command", "")).strip() == "ls":
        entries = _entries(result)
        if not entries:
            return _text(f"I ran `ls` in {turn.cwd or 'the working directory'}: it is empty.")
        shown = ", ".join(entries[:_SHOWN]) + (", …" if len(entries) > _SHOWN else "")
        count = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
        return _text(
            f"I ran `ls` in {turn.cwd or 'the working directory'}: {count}: {shown}. "
            "Ask me to read one of them and I will open it with the Read tool."
        )
    if name == "Read":
        lines = [_LINE_NUMBER.sub("", line) for line in user_words(result).splitlines()]
        while lines and not lines[-1].strip():
            lines.pop()
        first = next((line.strip() for line in lines if line.strip()), "")
        target = str(arguments.get("file_path", "the file")).rsplit("/", 1)[-1]
        if not first:
            return _text(f"I read {target}: it is empty.")
        count = f"{len(lines)} line{'' if len(lines) == 1 else 's'}"
        return _text(f"I read {target}: {count}, starting with: {first[:200]}")
    return _text(f"The {name or 'tool'} call returned: {result.strip()[:300]}")


def _target(turn: Turn, files: list[str]) -> str | None:
    """The file the words name (listed earlier or not), else the first one listed."""
    named = [name for name in files if name in turn.words] + _FILE.findall(turn.words)
    return named[0] if named else (files[0] if files else None)


def act(turn: Turn) -> tuple[Block, ...] | None:
    """The blocks answering ``turn`` with a tool (or about a tool's result), or ``None`` when
    the turn asks for nothing a tool could do."""
    if turn.tool_result is not None:
        return _answer(turn, turn.tool_result)
    if not turn.tools or not _ACTION.search(turn.words):
        return None
    target = _target(turn, _files_seen(turn)) if _READ.search(turn.words) else None
    if target is not None and "Read" in turn.tools and turn.cwd:
        path = f"{turn.cwd.rstrip('/')}/{target}"
        return (tool_block("Read", {"file_path": path}),)
    if target is not None and "Bash" in turn.tools:
        return (tool_block("Bash", {"command": f"cat {target}", "description": f"Show {target}"}),)
    if "Bash" in turn.tools:
        return (tool_block("Bash", {"command": "ls", "description": "List the files here"}),)
    return None
