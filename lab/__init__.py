"""ThoughtLab library: models, corpora, objectives, the training loop, evaluation, the store.
It knows nothing of Streamlit: everything the web app does, a script can do with it."""
