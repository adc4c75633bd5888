       01  R.
                03 N     PIC X(1).
                03 V     PIC X(10).
    