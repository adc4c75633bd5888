         01  ENTITY.
           05  A    PIC X(1).
           05  B    PIC X(3).
    