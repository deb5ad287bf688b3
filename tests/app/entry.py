"""AppTest entry point: runs app.py from a folder without a pages/ directory.

Next to a pages/ folder, AppTest treats the app as a legacy multipage app after the first run
and runs the page file alone (no sidebar); from here st.navigation is used as in the browser.
"""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parents[2] / "app.py"), run_name="__main__")
