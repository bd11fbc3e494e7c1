# Copied to the board's root as /main.py; the firmware package lives in /lib/firmware.
from firmware import app

app.main()
