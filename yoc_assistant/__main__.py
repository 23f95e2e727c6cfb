from yoc_assistant.cli import main

main()
