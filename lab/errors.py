"""The one exception type the lab raises for bad input: its message is shown to the user as is."""


class LabError(Exception):
    """A problem the user can fix (bad model, corpus, setting, run id...). The message says
    what is wrong and what to do; the CLI prints it without a traceback, the UI shows it."""
