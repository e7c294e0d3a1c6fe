# gatehouse formula: the package, the checked config with its secrets, the
# service. `state.apply gatehouse` runs all three; each can run alone.
include:
  - gatehouse.package
  - gatehouse.config
  - gatehouse.service
