"""`gpts serve`: an OpenAI-compatible HTTP API over the batching engine, the store and fine-tuning.

Layers, as in vLLM's server (dependencies point down):
    routes/      thin FastAPI routers, one module per API area; parse, call the serving layer, shape the reply
    protocol.py  pydantic request and response models of the OpenAI endpoints (no torch)
    serving.py   the serving layer: which models exist, loading them, one engine per base model, GPT prompts
    errors.py    OpenAI-shaped errors ({"error": {"message", "type", "param", "code"}}) and their handlers
    app.py       the application: settings, middleware (keys, body limits, CORS, access log), lifespan

Importing the app and its routes does not import torch: the serving layer loads models (and torch) on startup.
"""
