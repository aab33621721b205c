"""Built-in tool specialists: deterministic Python behind the same interface as an LLM."""
