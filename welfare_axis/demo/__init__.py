"""`welfare-axis demo`: a local web app (Gradio) and HTTP API for live steering.

`shipped` holds the default vectors that ship with the package, `service` the model, vectors,
lock and streaming steered generation (no web code, testable without a browser), `app` the
Gradio UI and the JSON API mounted on one FastAPI app.
"""
