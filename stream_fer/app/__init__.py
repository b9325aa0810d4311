"""The browser app (`stream-fer serve`): a thin Gradio shell over the same per-frame analysis the CLI runs.

Only stream_fer.app.app imports gradio; the rest of this package (sessions, panels, uploads) is plain
Python so the handlers can be tested, and imported, without it.
"""
