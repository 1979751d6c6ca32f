from saathii import create_app

app = create_app()
