"""The store: custom GPTs, their versions, knowledge, ratings and conversations, in one SQLite file in $GPTS_HOME.

    from gpts import store
    gpt = store.create_gpt(store.read_spec("hr.yaml")[0], base_dir=Path("."))
    store.search_gpts("handbook")
    store.rate_gpt("larkspur-hr", 5, "Knows the leave policy.")

Nothing here imports torch: listing, searching, showing, rating, exporting and importing answer at once. Creating
a GPT with knowledge files loads its model's tokenizer (to cut them into chunks of its tokens), and answering
(gpts.assistant) loads the model.

    db.py             the database: connection, numbered migrations, transactions
    catalogue.py      GPTs and versions: create, edit, restore, remove, list, search, rate
    files.py          the copies of knowledge files, stored once by content hash
    fts.py            full-text terms for every language (CJK as character pairs)
    retrieval.py      the passages of a GPT's knowledge that answer a question
    conversations.py  threads and messages, with GPTs and with models
    bundles.py        a GPT as one .gpt file (export, import), and Ollama's Modelfile in and out
    archive.py        the .gpt archive format, and the checks that make importing one safe
    ready.py          the GPTs that ship with gpts, installed on first use
"""

from gpts.spec import GptSpec, parse_spec, read_spec
from gpts.store.bundles import export_gpt, export_ollama, import_gpt, import_modelfile, is_bundle
from gpts.store.catalogue import (Gpt, Rating, Version, create_gpt, edit_gpt, featured_gpts, get_gpt, gpt_versions,
                                  list_gpts, rate_gpt, record_evaluation, remove_gpt, restore_gpt, search_gpts,
                                  set_featured, trending_gpts)
from gpts.store.conversations import (Conversation, add_turn, get_conversation, list_conversations,
                                      remove_conversation, rename_conversation, start_conversation)
from gpts.store.db import connect, database_path
from gpts.store.ready import install_ready_gpts
from gpts.store.retrieval import Passage, retrieve

__all__ = [
    "Conversation", "Gpt", "GptSpec", "Passage", "Rating", "Version", "add_turn", "connect", "create_gpt",
    "database_path", "edit_gpt", "export_gpt", "export_ollama", "featured_gpts", "get_conversation", "get_gpt", "gpt_versions",
    "import_gpt", "import_modelfile", "install_ready_gpts", "is_bundle", "list_conversations", "list_gpts", "parse_spec", "rate_gpt", "read_spec",
    "record_evaluation", "remove_conversation", "remove_gpt", "rename_conversation", "restore_gpt", "retrieve", "search_gpts",
    "set_featured", "start_conversation", "trending_gpts",
]
