"""The Chat tab: streaming answers labelled with who answered, a live trace, thumbs up/down.

Built on Gradio's own `ChatInterface` (markdown and code rendering, copy buttons, stop, retry,
undo, clear for a new conversation). Each answer carries the route decision as a footer; the
messages between specialists appear as a collapsible "mesh trace" message above it.
"""

import html
import re
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from mesh.client import MeshClient
from mesh.trace_view import decision_note, render_trace, trace_root
from registry.errors import MeshError
from ui.app import public_message

AUTO = "auto (router decides)"
FOOTER = "\n\n---\n"
TRACE_TITLE = "mesh trace"
MAX_REMEMBERED = 2048


def escape_markdown(text: str) -> str:
    """Text from a specialist shown inside the footer's markdown: as text, never as markup."""
    return re.sub(r"([\\`*_\[\]()#|~])", r"\\\1", html.escape(text))


def attribution(mesh_info: dict[str, Any]) -> str:
    """The footer under each answer: who answered, how they were chosen, with what scores."""
    decision = mesh_info["decision"]
    scores = ", ".join(f"{t['name']} {t['score']:.2f}" for t in decision["targets"])
    handed = escape_markdown(decision_note(decision))
    return (
        f"{FOOTER}*answered by **{mesh_info['specialist']}** "
        f"({decision['mode']}; scores: {scores or 'n/a'}{handed})*"
    )


def with_footer(text: str, footer: str) -> str:
    """The answer, then its footer. A code fence the answer left open (cut by `max_tokens`) is
    closed first: otherwise the footer would render inside the code block, as raw text."""
    if text.count("```") % 2:
        text += "\n```"
    return text + footer


def history_messages(history: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Gradio's history as OpenAI messages: trace messages and footers are display only."""
    messages = []
    for turn in history:
        content = turn.get("content")
        metadata = turn.get("metadata") or {}
        if metadata.get("title") or turn.get("role") not in ("user", "assistant"):
            continue
        if isinstance(content, str):
            messages.append({"role": turn["role"], "content": content.split(FOOTER)[0]})
    return messages


class ChatSession:
    """Streams answers from the gateway and remembers completion ids for feedback."""

    def __init__(self, client: MeshClient) -> None:
        self.client = client
        self.ids: OrderedDict[str, str] = OrderedDict()  # answer text -> completion id

    def respond(
        self, message: str, history: list[dict[str, Any]], specialist: str
    ) -> Iterator[Any]:
        messages = [*history_messages(history), {"role": "user", "content": message}]
        model = "mesh" if specialist in (AUTO, "", None) else specialist
        text, footer, completion_id, root = "", "", "", model
        events: list[dict[str, Any]] = []
        try:
            for chunk in self.client.chat_stream(messages, model=model):
                completion_id = chunk.get("id", completion_id)
                extra = chunk.get("mesh") or {}
                if "trace_event" in extra:
                    if extra["trace_event"] not in events:  # gateway events come in both
                        events.append(extra["trace_event"])
                elif "decision" in extra:
                    footer = attribution(extra)
                    events = list(extra.get("trace") or [])
                    root = trace_root(extra)
                elif chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    text += chunk["choices"][0]["delta"]["content"]
                yield self._render(root, events, text)
        except Exception as error:  # the page shows a clean line, the log keeps the rest
            yield f"**The mesh could not answer:** {public_message(error)}"
            return
        answer = with_footer(text, footer)
        final = self._render(root, events, answer)
        self._remember(answer, completion_id)
        yield final

    def feedback(self, data: Any) -> str:
        """Chatbot like/dislike -> POST /v1/feedback for the completion behind that answer."""
        value = _text_of(data.value).strip()
        completion_id = next(
            (cid for text, cid in reversed(self.ids.items()) if text.strip() == value), None
        )
        if completion_id is None:
            return "feedback not recorded: answer not found"
        try:
            self.client.feedback(completion_id, "up" if data.liked else "down")
        except MeshError as error:
            return f"feedback not recorded: {public_message(error)}"
        return "thanks for the feedback"

    def _render(self, root: str, events: list[dict[str, Any]], text: str) -> Any:
        import gradio as gr

        answer = gr.ChatMessage(content=text or "...")
        if not events:
            return answer
        hops = ", ".join(f"{e['from']} -> {e['to']}" for e in events[:4])
        trace = gr.ChatMessage(
            content=f"```\n{render_trace(root, events)}\n```",
            metadata={"title": f"{TRACE_TITLE}: {hops}", "status": "done"},
        )
        return [trace, answer]

    def _remember(self, text: str, completion_id: str) -> None:
        self.ids[text] = completion_id
        while len(self.ids) > MAX_REMEMBERED:
            self.ids.popitem(last=False)


def _text_of(value: Any) -> str:
    """Gradio hands liked messages over as a string, a content dict, or a list of parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return _text_of(value.get("text") or value.get("value") or value.get("content") or "")
    if isinstance(value, list):
        return "".join(_text_of(part) for part in value)
    return str(value or "")


def specialist_choices(client: MeshClient) -> Any:
    import gradio as gr

    try:
        names = [m["id"] for m in client.models() if m["id"] != "mesh"]
    except MeshError:
        names = []
    return gr.update(choices=[AUTO, *names], value=AUTO)


def build_chat_tab(client: MeshClient) -> Any:
    """Render the chat tab inside the current Blocks context."""
    import gradio as gr

    session = ChatSession(client)
    picker = gr.Dropdown(
        choices=[AUTO], value=AUTO, label="Specialist", render=False, elem_id="chat-picker"
    )
    chatbot = gr.Chatbot(
        height=520,
        buttons=["copy", "copy_all"],
        feedback_options=("Like", "Dislike"),
        elem_id="mesh-chatbot",
        label="specialist-mesh",
    )
    status = gr.Markdown(visible=True, elem_id="feedback-status")
    gr.ChatInterface(
        session.respond,
        chatbot=chatbot,
        additional_inputs=[picker],
        additional_inputs_accordion=gr.Accordion("Specialist", open=True, render=False),
        examples=[
            ["Write a Python function that checks if a number is prime.", AUTO],
            ["What is 17*23?", AUTO],
            ["Write a short poem about autumn leaves.", AUTO],
        ],
        cache_examples=False,
        fill_height=True,
    )

    def on_like(data: gr.LikeData) -> str:
        return session.feedback(data)

    chatbot.like(on_like, outputs=status)
    return picker
