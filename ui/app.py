"""The Gradio chat UI. It talks to the gateway's HTTP API only, never to mesh internals.

Served by Ray Serve at /ui on the same port as the API (`build_ui_app`), or standalone with
`python -m ui.app --url http://127.0.0.1:8000`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

AUTO = "auto (router decides)"


def _history_messages(history: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Gradio's message history as plain OpenAI messages (labels and metadata dropped)."""
    messages = []
    for turn in history:
        content = turn.get("content")
        if isinstance(content, str) and turn.get("role") in ("user", "assistant"):
            messages.append({"role": turn["role"], "content": content.split("\n\n---\n")[0]})
    return messages


def attribution(mesh_info: dict[str, Any]) -> str:
    """The footer under each answer: who answered, how they were chosen, with what score."""
    decision = mesh_info["decision"]
    scores = ", ".join(f"{t['name']} {t['score']:.2f}" for t in decision["targets"])
    return (
        f"\n\n---\n*answered by **{mesh_info['specialist']}** "
        f"({decision['mode']}; scores: {scores or 'n/a'})*"
    )


def build_blocks(base_url: str) -> Any:
    import gradio as gr

    from mesh.client import MeshClient
    from registry.errors import MeshError

    client = MeshClient(base_url)

    def respond(message: str, history: list[dict[str, Any]], specialist: str) -> Iterator[str]:
        messages = [*_history_messages(history), {"role": "user", "content": message}]
        model = "mesh" if specialist in (AUTO, "", None) else specialist
        text, footer = "", ""
        try:
            for chunk in client.chat_stream(messages, model=model):
                if "mesh" in chunk:
                    footer = attribution(chunk["mesh"])
                delta = (
                    chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else None
                )
                if delta:
                    text += delta
                    yield text
            yield text + footer
        except MeshError as error:
            yield f"**The mesh could not answer:** {error.message}"

    def specialist_choices() -> Any:
        try:
            names = [m["id"] for m in client.models() if m["id"] != "mesh"]
        except MeshError:
            names = []
        return gr.update(choices=[AUTO, *names], value=AUTO)

    with gr.Blocks(title="specialist-mesh") as demo:
        gr.Markdown(
            "# specialist-mesh\n"
            "One front door, many specialists. Pick one or let the router decide."
        )
        picker = gr.Dropdown(choices=[AUTO], value=AUTO, label="Specialist", render=False)
        gr.ChatInterface(
            respond,
            additional_inputs=[picker],
            additional_inputs_accordion=gr.Accordion("Specialist", open=True),
            examples=[
                ["Write a Python function that checks if a number is prime.", AUTO],
                ["Write a short poem about autumn leaves.", AUTO],
                ["Why is the sky blue?", AUTO],
            ],
            cache_examples=False,
        )
        demo.load(specialist_choices, outputs=picker)
    return demo


def build_ui_app(base_url: str) -> Any:
    """A Serve application serving the Gradio app; `mesh up` mounts it at /ui."""
    from ray import serve

    @serve.ingress()
    class ChatUI:
        def __init__(self, gateway_url: str) -> None:
            self.gateway_url = gateway_url

        def __serve_build_asgi_app__(self) -> Any:
            import gradio as gr
            from fastapi import FastAPI

            return gr.mount_gradio_app(FastAPI(), build_blocks(self.gateway_url), path="")

    deployment = serve.deployment(
        ChatUI, name="ui", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=100
    )
    return deployment.bind(base_url)  # type: ignore[attr-defined]


if __name__ == "__main__":  # pragma: no cover - manual use
    import argparse

    parser = argparse.ArgumentParser(description="Run the mesh UI against a running gateway.")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    build_blocks(args.url).launch(server_port=args.port)
