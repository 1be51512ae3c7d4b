"""Who may pull: public or team access, Google tokens and robot tokens."""
