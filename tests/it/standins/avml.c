/*
 * A stand-in for AVML, for the capture tests: copies the image in
 * $FIREBREAK_STANDIN_DIR/avml.image to the file it is given, taking the
 * syntax named in avml.mode: `acquire` (AVML 0.19 and later: `avml
 * acquire FILE`; `avml FILE` is an unknown subcommand, exit 2) or
 * `legacy` (`avml FILE`). `--help` prints the usage each prints. Every
 * call is appended to calls.log. It is an ELF executable, as
 * `firebreak tools add avml` requires.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *dir;

static void read_config(const char *name, char *out, size_t n) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    out[0] = 0;
    FILE *f = fopen(p, "r");
    if (!f) return;
    if (fgets(out, (int)n, f)) out[strcspn(out, "\n")] = 0;
    fclose(f);
}

int main(int argc, char **argv) {
    dir = getenv("FIREBREAK_STANDIN_DIR");
    if (!dir) return 1;
    char p[4096];
    snprintf(p, sizeof p, "%s/calls.log", dir);
    FILE *log = fopen(p, "a");
    if (log) {
        fprintf(log, "avml");
        for (int i = 1; i < argc; i++) fprintf(log, " %s", argv[i]);
        fprintf(log, "\n");
        fclose(log);
    }
    char mode[64], image[4096];
    read_config("avml.mode", mode, sizeof mode);
    read_config("avml.image", image, sizeof image);
    int acquire = strcmp(mode, "acquire") == 0;
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        if (acquire)
            printf("A portable volatile memory acquisition tool for Linux\n\n"
                   "Usage: avml <COMMAND>\n\nCommands:\n"
                   "  acquire  Acquire a memory snapshot to a local file\n"
                   "  convert  Convert a memory snapshot to LiME or compressed format\n"
                   "  help     Print this message or the help of the given subcommand(s)\n");
        else
            printf("avml 0.14.0\nA portable volatile memory acquisition tool\n\n"
                   "USAGE:\n    avml [OPTIONS] <filename>\n\nARGS:\n    <filename>    name of the file to write to on local system\n");
        return 0;
    }
    const char *target = NULL;
    if (acquire) {
        if (argc != 3 || strcmp(argv[1], "acquire") != 0) {
            fprintf(stderr, "error: unrecognized subcommand '%s'\n\nUsage: avml <COMMAND>\n\n"
                            "For more information, try '--help'.\n", argc > 1 ? argv[1] : "");
            return 2;
        }
        target = argv[2];
    } else {
        if (argc != 2) {
            fprintf(stderr, "error: Found argument '%s' which wasn't expected\n", argc > 2 ? argv[2] : "");
            return 2;
        }
        target = argv[1];
    }
    FILE *in = fopen(image, "rb");
    int out = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600);
    if (!in || out < 0) {
        fprintf(stderr, "avml stand-in: cannot open the image or %s\n", target);
        return 1;
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        size_t off = 0;
        while (off < n) {
            ssize_t k = write(out, buf + off, n - off);
            if (k < 0) return 1;
            off += (size_t)k;
        }
    }
    return 0;
}
