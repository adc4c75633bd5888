"""Small model servers that serve the bundled ONNX model over a real HTTP protocol, run
as separate processes by the integration tests (and usable as a local stand-in for a
production model server). Each needs its server package (`kserve`), installed by the
`dev` extra; nothing in the gateway imports them."""
