"""OpenAI tool calling on any specialist whose engine decodes with a grammar.

The model sees the tools in a system message and calls one by answering
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`. That answer is held by a grammar
(`specialists.grammar`, llguidance's Lark dialect with the tools' JSON schemas embedded), so the
name is one of the tools and the arguments validate against its `parameters`:

- `tool_choice: "auto"`: free text, or (once the answer starts with the marker) one call;
- `"required"`: one call to any tool; a named function: one call to that tool;
- `"none"`: the tools are not shown at all.

`ToolCallReader` turns a choice's text back into OpenAI's message (or streamed deltas) with
`tool_calls` and `finish_reason: "tool_calls"`. Earlier turns (an assistant's `tool_calls`,
`role: tool` results) are rendered back into the same text form, so any chat template works.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from specialists.grammar import Grammar

OPEN, CLOSE = "<tool_call>", "</tool_call>"
MAX_TOOLS = 32
ToolMode = Literal["text", "call", "auto"]


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = Field(None, max_length=4000)
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="A JSON Schema the arguments validate against (enforced by the grammar).",
    )
    strict: bool | None = None


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    function: FunctionSpec


class FunctionName(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class CalledFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    arguments: str = Field(
        max_length=32_000, description="The arguments as a JSON text, as OpenAI sends them."
    )


class ToolCall(BaseModel):
    """A tool call in an assistant message (a client sends earlier ones back)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(max_length=128)
    type: Literal["function"] = "function"
    function: CalledFunction


def mode_of(tools: list[ToolSpec] | None, choice: ToolChoice | None) -> ToolMode:
    """How the answer may use tools: not at all, must call one, or may call one."""
    if not tools or choice == "none":
        return "text"
    if choice is None or choice == "auto":
        return "auto"
    return "call"


def offered(tools: list[ToolSpec], choice: ToolChoice | None) -> list[ToolSpec]:
    """The tools the model may call: all of them, or the one `tool_choice` names."""
    if isinstance(choice, NamedToolChoice):
        return [t for t in tools if t.function.name == choice.function.name]
    return tools


def tool_grammar(tools: list[ToolSpec], choice: ToolChoice | None) -> Grammar | None:
    """The grammar holding the answer to a call of one of the offered tools (or, in `auto`,
    to free text not starting with the call marker)."""
    mode = mode_of(tools, choice)
    if mode == "text" or not offered(tools, choice):  # nothing to call (yet)
        return None
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": t.function.name}, "arguments": t.function.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in offered(tools, choice)
    ]
    schema = json.dumps(calls[0] if len(calls) == 1 else {"anyOf": calls})
    call = f'CALL_OPEN call CALL_CLOSE\ncall: %json {schema}\nCALL_OPEN: "{OPEN}"\n'
    call += f'CALL_CLOSE: "{CLOSE}"\n'
    # In `auto`, free text may not begin with '<', so the marker decides at once.
    free = "TEXT | " if mode == "auto" else ""
    lark = f"start: {free}{call}" + ("TEXT: /[^<][\\s\\S]*/\n" if free else "")
    return Grammar(kind="lark", lark=lark, param="tools")


def tools_prompt(tools: list[ToolSpec], choice: ToolChoice | None) -> str | None:
    """The system message that shows the model its tools (None: no tools to show)."""
    mode = mode_of(tools, choice)
    if mode == "text":
        return None
    listed = "\n".join(
        json.dumps(
            {
                "name": t.function.name,
                "description": t.function.description or "",
                "parameters": t.function.parameters,
            }
        )
        for t in offered(tools, choice)
    )
    how = "You must call one of them" if mode == "call" else "You may call one of them"
    return (
        f"You have these tools:\n{listed}\n{how} by answering only "
        f'{OPEN}{{"name": <tool name>, "arguments": <JSON arguments>}}{CLOSE}. '
        "Tool results come back in <tool_response> blocks: use them to answer."
    )


def render_call(call: ToolCall) -> str:
    """An earlier tool call, in the text form the model writes."""
    try:
        arguments: Any = json.loads(call.function.arguments or "{}")
    except json.JSONDecodeError:
        arguments = call.function.arguments
    return f"{OPEN}{json.dumps({'name': call.function.name, 'arguments': arguments})}{CLOSE}"


def render_result(content: str, call_id: str | None, name: str | None) -> str:
    """A `role: tool` message as the text the model reads (data, in a delimited block)."""
    attributes = "".join(
        f" {key}={json.dumps(value)}" for key, value in (("name", name), ("id", call_id)) if value
    )
    return f"<tool_response{attributes}>\n{content}\n</tool_response>"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class ToolCallReader:
    """One choice's text as OpenAI message deltas: `content` pieces, or one `tool_calls` entry
    once the call is complete. In `auto` mode the text is held only while it could still be
    the call marker's start."""

    def __init__(self, mode: ToolMode) -> None:
        self.mode = mode
        self.held = ""
        self.calling = mode == "call"
        self.decided = mode != "auto"

    def feed(self, text: str) -> list[dict[str, Any]]:
        if self.mode == "text" or (self.decided and not self.calling):
            return [{"content": text}] if text else []
        self.held += text
        if self.decided:
            return []
        if self.held.startswith(OPEN):
            self.decided = self.calling = True
            return []
        if OPEN.startswith(self.held):
            return []  # could still become the marker
        self.decided = True
        out, self.held = self.held, ""
        return [{"content": out}]

    def finish(self, reason: str) -> tuple[list[dict[str, Any]], str]:
        """The last deltas and the finish reason ("tool_calls" for a complete call)."""
        if not self.calling:
            rest, self.held = self.held, ""
            return ([{"content": rest}] if rest else []), reason
        call = parse_call(self.held)
        if call is None:  # cut short (max_tokens, deadline): what was written, as text
            rest, self.held = self.held, ""
            return ([{"content": rest}] if rest else []), reason
        self.held = ""
        entry = {"index": 0, **call.model_dump()}
        return [{"tool_calls": [entry]}], "tool_calls"

    def message(self, text: str, reason: str) -> tuple[dict[str, Any], str]:
        """The whole answer as one OpenAI assistant message."""
        deltas = self.feed(text)
        last, finish = self.finish(reason)
        content = "".join(d.get("content", "") for d in [*deltas, *last])
        calls = [c for d in last for c in d.get("tool_calls", [])]
        message: dict[str, Any] = {"role": "assistant", "content": content or None}
        if calls:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
        elif message["content"] is None:
            message["content"] = ""
        return message, finish


def parse_call(text: str) -> ToolCall | None:
    """The call in `<tool_call>{...}</tool_call>`, or None if it is incomplete."""
    if not (text.startswith(OPEN) and text.endswith(CLOSE)):
        return None
    try:
        body = json.loads(text[len(OPEN) : -len(CLOSE)])
    except json.JSONDecodeError:
        return None
    arguments = json.dumps(body.get("arguments", {}))
    function = CalledFunction(name=body["name"], arguments=arguments)
    return ToolCall(id=new_call_id(), function=function)
