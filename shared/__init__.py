"""What every investflow service uses: the event contract, settings, streams, storage, rules."""
