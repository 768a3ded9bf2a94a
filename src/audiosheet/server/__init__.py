"""The web server: a warm process with the model and the collection loaded once, a JSON API and a
page people use in a browser (``audiosheet serve``; the optional extra ``audiosheet[serve]``)."""
