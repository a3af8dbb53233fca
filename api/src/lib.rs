//! Types of the StaticWire HTTP API, shared by `staticwire-control` and `staticip`.
