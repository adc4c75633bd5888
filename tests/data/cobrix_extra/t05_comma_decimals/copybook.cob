       01  R.
                03 N     PIC +999,99 USAGE DISPLAY.
    