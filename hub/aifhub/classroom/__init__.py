"""The live workshop: raised hands and consented help, announcements, materials pushed to learners, attendance."""
