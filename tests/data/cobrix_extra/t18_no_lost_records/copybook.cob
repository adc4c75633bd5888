         01  ENTITY.
           05  A    PIC X(3).
           05  B    PIC X(3).
    