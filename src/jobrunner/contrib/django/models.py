"""No models: jobrunner's tables are its own (see migrations/0001_initial.py).

The module exists because Django sends ``post_migrate`` only to apps with a models module,
and that signal is how ``migrate`` applies the SQL migrations of a newer jobrunner.
"""
