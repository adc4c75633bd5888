      01 ROOT.
                05  ENTITY1.
                  10  A    PIC X.
                05  ENTITY2 REDEFINES ENTITY1.
                  10  B    PIC X.
    