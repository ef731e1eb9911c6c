"""The facestream command line (``./facestream``): enroll a folder of people, submit images,
re-run failed ones, manage API keys, demo.

It talks to the platform only through its public HTTP APIs, like any other client.
"""
