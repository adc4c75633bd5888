         01  R.
           05  N    PIC S9(4).
    