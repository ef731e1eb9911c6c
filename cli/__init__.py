"""The facestream command line: enroll a folder of people, submit a folder of images, demo.

It talks to the platform only through its public HTTP APIs, like any other client.
"""
