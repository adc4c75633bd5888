         01  R.
           05  A    PIC 9(4).
           05  B    PIC S9(4).
    