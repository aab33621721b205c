"""The Gradio UI: Chat, Store and Mesh tabs. It talks to the gateway's HTTP API only.

Served by Ray Serve at /ui on the same port as the API (`build_ui_app`), or standalone with
`python -m ui.app --url http://127.0.0.1:8000`.
"""

from __future__ import annotations

from typing import Any


def build_blocks(base_url: str) -> Any:
    import gradio as gr

    from mesh.client import MeshClient
    from ui.chat import build_chat_tab, specialist_choices
    from ui.mesh_tab import build_mesh_tab
    from ui.store_tab import build_store_tab

    client = MeshClient(base_url, timeout_s=600)
    with gr.Blocks(title="specialist-mesh") as demo:
        gr.Markdown("# specialist-mesh\nOne front door, many specialists.")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat") as chat_tab:
                picker = build_chat_tab(client)
            with gr.Tab("Store", id="store") as store_tab:
                refresh_store, store_outputs = build_store_tab(client)
            with gr.Tab("Mesh", id="mesh") as mesh_tab:
                timer = build_mesh_tab(client)
        # poll the mesh only while someone looks at it
        mesh_tab.select(lambda: gr.Timer(active=True), outputs=timer)
        for other in (chat_tab, store_tab):
            other.select(lambda: gr.Timer(active=False), outputs=timer)
        demo.load(lambda: specialist_choices(client), outputs=picker)
        demo.load(refresh_store, outputs=store_outputs)
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

            from ui.store_tab import CSS

            blocks = build_blocks(self.gateway_url)
            return gr.mount_gradio_app(FastAPI(), blocks, path="", css=CSS)

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
    from ui.store_tab import CSS

    build_blocks(args.url).launch(server_port=args.port, css=CSS)
