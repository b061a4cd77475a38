"""lossbench's Hydra launchers (Hydra finds plugins only in the `hydra_plugins` namespace and
imports every module here at start-up, so these stay small; the logic is in
`lossbench.launchers`)."""
