"""PV LLM Studio core: UI-free logic shared by the Streamlit app and tools."""
