"""The command line: argument parsing, one-line errors and exit codes, progress; the only code that prints or
exits."""
