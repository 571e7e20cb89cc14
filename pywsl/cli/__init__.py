"""The `pywsl` command: wsl.exe's command line (`WslClient.cpp`) on a Linux host.

`main.py` is the console script, `grammar.py` the click command that reads the arguments as
wsl.exe does, `launch.py` the launch path, the verb modules the management options, `render.py`
and `progress.py` the output. Nothing here is imported by the library.
"""
