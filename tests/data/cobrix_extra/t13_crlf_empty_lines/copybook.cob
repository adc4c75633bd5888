         01  ENTITY.
           05  A    PIC X(2).
    