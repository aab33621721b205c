"""`relay`: forwards each message to the first specialist in its `can_message`.

A minimal delegating tool, useful to compose specialists in a chain (and to test the bounds:
two relays pointing at each other form a cycle that the mesh must refuse).
"""

from __future__ import annotations

from specialists.context import MeshContext


async def run(text: str, ctx: MeshContext) -> str:
    if not ctx.can_message:
        return "relay has no target: list one in can_message"
    result = await ctx.ask(ctx.can_message[0], text)
    return (
        result.text if result.ok else f"relay could not reach {ctx.can_message[0]}: {result.note}"
    )
