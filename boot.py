# Runs first at every reset. Keep it short and make sure it always returns: a boot.py that hangs or
# raises leaves the board without a REPL. Safe mode and everything else is decided in the app.
try:
    import gc

    gc.collect()
except Exception as e:  # never let boot fail
    print("boot:", e)
