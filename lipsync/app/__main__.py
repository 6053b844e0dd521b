from lipsync.app.launch import main

main()
