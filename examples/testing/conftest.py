# With rembus installed (pip install "rembus[testing]") the plugin is found by
# itself; naming it here also makes these tests run from a source checkout.
pytest_plugins = ["rembus.testing.plugin"]
