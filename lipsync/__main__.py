from lipsync.cli import run

run()
