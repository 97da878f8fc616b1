"""The Streamlit dashboard (pages only render what ``analysis`` computes)."""
