"""HTTP edge: parse, authorize, call one service, render. No SQL, files or subprocess logic here."""
