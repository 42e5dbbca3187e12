# Device entry point: start the terminal (everything lives in lib/clockterm).
import clockterm.app

clockterm.app.run()
