      *****************************************************************
      * CARDTXN - CARD TRANSACTION EXTRACT, NIGHTLY, FIXED 120 BYTES  *
      *                                                               *
      * ONE HEADER (TYPE 'H'), N DETAILS (TYPE 'D'), ONE TRAILER      *
      * (TYPE 'T'). ALL THREE RECORDS ARE 120 BYTES (RECFM=FB).       *
      * THE TRAILER CARRIES THE DETAIL COUNT AND THE HASH TOTAL OF    *
      * TXN-AMOUNT FOR RECONCILIATION.                                *
      *****************************************************************
       01  CARD-HDR.
           05  HDR-REC-TYPE            PIC X.
               88  HDR-IS-HEADER       VALUE 'H'.
           05  HDR-FILE-ID             PIC X(8).
           05  HDR-FILE-DATE           PIC 9(8).
           05  HDR-SOURCE-SYSTEM       PIC X(8).
           05  HDR-FILE-SEQ            PIC 9(6).
           05  HDR-LAYOUT-VERSION      PIC 9(2).
           05  FILLER                  PIC X(87).
      *
      * DETAIL: ONE AUTHORISED/SETTLED CARD TRANSACTION.
      * TXN-AMOUNT IS NEGATIVE FOR REFUNDS. BALANCE IS THE ACCOUNT
      * BALANCE AFTER THE TRANSACTION (ZONED DECIMAL, SIGN OVERPUNCHED
      * ON THE LAST BYTE). TERMINAL-ID AND AUTH-CODE ARE BINARY.
      *
       01  CARD-TXN.
           05  TXN-REC-TYPE            PIC X.
               88  TXN-IS-DETAIL       VALUE 'D'.
           05  TXN-ID                  PIC X(12).
           05  TXN-PAN                 PIC X(16).
           05  TXN-DATE                PIC 9(8).
           05  TXN-TIME                PIC 9(6).
           05  MERCHANT-NAME           PIC X(22).
           05  MCC                     PIC 9(4).
           05  COUNTRY                 PIC X(2).
           05  CURRENCY                PIC X(3).
           05  TXN-AMOUNT              PIC S9(9)V99 COMP-3.
           05  BALANCE                 PIC S9(7)V99.
           05  CASHBACK-AMOUNT         PIC S9(5)V99 COMP-3.
           05  TERMINAL-ID             PIC S9(8) COMP.
           05  AUTH-CODE               PIC 9(4) COMP.
           05  CHANNEL                 PIC X.
               88  CHANNEL-POS         VALUE 'P'.
               88  CHANNEL-ECOM        VALUE 'E'.
               88  CHANNEL-MOTO        VALUE 'M'.
           05  FILLER                  PIC X(20).
      *
      * TRAILER: CONTROL TOTALS OVER ALL DETAIL RECORDS OF THE FILE.
      *
       01  CARD-TRL.
           05  TRL-REC-TYPE            PIC X.
               88  TRL-IS-TRAILER      VALUE 'T'.
           05  TRL-COUNT               PIC 9(9).
           05  TRL-AMOUNT-TOTAL        PIC S9(13)V99 COMP-3.
           05  FILLER                  PIC X(102).
