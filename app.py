"""ThoughtLab web app: `streamlit run app.py` (make run serves it on 127.0.0.1:8501)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import streamlit as st  # noqa: E402

from jobs.manager import cpu_info, gpus  # noqa: E402
from pages.common import data_dir, read_only_banner  # noqa: E402

st.set_page_config(page_title="ThoughtLab", page_icon=":material/science:", layout="wide")

DEMO = bool(os.environ.get("THOUGHTLAB_DEMO"))     # `make demo`: open on the example's results
PAGES = {
    "Train": [st.Page("pages/launch.py", title="Launch", icon=":material/rocket_launch:", default=not DEMO),
              st.Page("pages/runs.py", title="Runs", icon=":material/monitoring:")],
    "Inspect": [st.Page("pages/forking.py", title="Forking tokens", icon=":material/call_split:"),
                st.Page("pages/thoughts.py", title="Thoughts", icon=":material/psychology:"),
                st.Page("pages/heatmap.py", title="Reward heatmap", icon=":material/grid_on:"),
                st.Page("pages/playground.py", title="Playground", icon=":material/science:")],
    "Evaluate": [st.Page("pages/benchmarks.py", title="Benchmarks", icon=":material/leaderboard:", default=DEMO),
                 st.Page("pages/nt_accuracy.py", title="Next-token accuracy", icon=":material/target:")],
}

nav = st.navigation(PAGES)

with st.sidebar:
    st.markdown("### :material/science: ThoughtLab")
    st.caption("Token-level reasoning objectives during pretraining")
    found = gpus()
    if found:
        for g in found:
            st.markdown(f"**GPU {g['index']}** · {g['name']} · {g['memory_gb']} GB")
    else:
        info = cpu_info()
        st.markdown(f"**CPU** · {info['cores']} cores · {info['memory_gb']} GB RAM · no GPU")
    st.caption(f"Data folder: `{data_dir()}`")
    read_only_banner()

nav.run()
