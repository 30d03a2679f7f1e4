"""`hnm report`: the data one HTML page about a run is built from (`risk`, `sections`, `evaluation_section`:
pure, plain values in and out), and its rendering (`render`, `assets`, `svg`: that data in, HTML text out).
`stages/report.py` reads the artifacts."""
