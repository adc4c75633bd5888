         01  R.
           05  D1    PIC 9V9.
           05  D2    PIC 9.9.
           05  D3    PIC +99.999.
        