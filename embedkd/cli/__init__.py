"""The `embedkd` console command: each subcommand parses its options and calls one library function."""
