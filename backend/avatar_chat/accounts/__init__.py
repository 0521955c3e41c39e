"""The signed-in user's account as a whole: deleting it."""
