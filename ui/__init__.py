"""Streamlit pieces every page shares: the sidebar and the run output panel."""
