         01  R.
           05  F.
              07 FILLER OCCURS 3 TIMES.
                 10 A1   PIC X.
                 10 A2   PIC X.
           05  B         PIC X(1).
    