/*
 * A stand-in for `insmod lime.ko "path=P format=lime timeout=N"` that
 * writes a LiME image the way LiME does, for the capture tests (which
 * cannot load kernel modules):
 *
 * - every page of a range is written and timed; when one takes longer
 *   than `timeout` milliseconds (LiME's default 1000; 0 disables it), the
 *   rest of the range is written as zeros ("Reading is too slow. Skipping
 *   Range...", LiME's write_range());
 * - a write that fails (EPIPE: the reader went away) skips the rest of
 *   the range, and the module init still returns 0: the module stays
 *   loaded;
 * - SIGPIPE is held while "init" runs and delivered when it returns, as
 *   the kernel delivers it on the return to user space: an insmod that
 *   inherited the default disposition dies of it after loading the module.
 *
 * Its world lives in $FIREBREAK_STANDIN_DIR: `lime.mode` (ok, vermagic,
 * key or exists), `lime.image` (the path of the image to "capture"),
 * `calls.log` (every call appended). "Loaded" means /sys/module/lime
 * exists (the tests mount a tmpfs there).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static const char *dir;

static void path_in(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", dir, name);
}

static void read_config(const char *name, char *out, size_t n) {
    char p[4096];
    path_in(p, sizeof p, name);
    out[0] = 0;
    FILE *f = fopen(p, "r");
    if (!f) return;
    if (fgets(out, (int)n, f)) out[strcspn(out, "\n")] = 0;
    fclose(f);
}

static void log_call(int argc, char **argv) {
    char p[4096];
    path_in(p, sizeof p, "calls.log");
    FILE *f = fopen(p, "a");
    if (!f) return;
    fprintf(f, "insmod");
    for (int i = 1; i < argc; i++) fprintf(f, " %s", argv[i]);
    fprintf(f, "\n");
    fclose(f);
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000.0 + t.tv_nsec / 1e6;
}

static int write_all(int fd, const unsigned char *b, size_t n) {
    while (n > 0) {
        ssize_t k = write(fd, b, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

int main(int argc, char **argv) {
    dir = getenv("FIREBREAK_STANDIN_DIR");
    if (!dir) {
        fprintf(stderr, "insmod stand-in: FIREBREAK_STANDIN_DIR is not set\n");
        return 1;
    }
    log_call(argc, argv);
    if (argc < 3) {
        fprintf(stderr, "insmod stand-in: usage: insmod MODULE PARAMS\n");
        return 1;
    }
    char mode[64], image[4096];
    read_config("lime.mode", mode, sizeof mode);
    read_config("lime.image", image, sizeof image);
    const char *why = NULL;
    if (strcmp(mode, "vermagic") == 0) why = "Invalid module format";
    if (strcmp(mode, "key") == 0) why = "Key was rejected by service";
    if (strcmp(mode, "exists") == 0) why = "File exists";
    if (why) {
        fprintf(stderr, "insmod: ERROR: could not insert module %s: %s\n", argv[1], why);
        return 1;
    }
    /* The parameters may come as one word or several. */
    char params[8192] = "";
    for (int i = 2; i < argc; i++) {
        strncat(params, argv[i], sizeof params - strlen(params) - 2);
        strcat(params, " ");
    }
    char out_path[4096] = "";
    long timeout = 1000; /* LiME's default */
    for (char *tok = strtok(params, " "); tok; tok = strtok(NULL, " ")) {
        if (strncmp(tok, "path=", 5) == 0) snprintf(out_path, sizeof out_path, "%s", tok + 5);
        if (strncmp(tok, "timeout=", 8) == 0) timeout = strtol(tok + 8, NULL, 10);
    }
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigprocmask(SIG_BLOCK, &pipe_set, &old);

    mkdir("/sys/module/lime", 0755); /* loaded while init runs */
    FILE *in = fopen(image, "rb");
    int out = open(out_path, O_WRONLY);
    if (!in || out < 0) {
        rmdir("/sys/module/lime");
        fprintf(stderr, "insmod: ERROR: could not insert module %s: No such file or directory\n", argv[1]);
        return 1;
    }
    unsigned char header[32], page[PAGE], zeros[PAGE];
    memset(zeros, 0, sizeof zeros);
    while (fread(header, 1, 32, in) == 32) {
        uint64_t start, end;
        memcpy(&start, header + 8, 8);
        memcpy(&end, header + 16, 8);
        uint64_t left = end - start + 1;
        int skip = write_all(out, header, 32) != 0;
        int zero_fill = 0;
        while (left > 0) {
            size_t n = left < PAGE ? (size_t)left : PAGE;
            if (fread(page, 1, n, in) != n) {
                fprintf(stderr, "insmod stand-in: the image is short\n");
                return 1;
            }
            left -= n;
            if (skip) continue;
            double t0 = now_ms();
            if (write_all(out, zero_fill ? zeros : page, n) != 0) {
                skip = 1; /* "Failed to write page ... Skipping Range" */
                continue;
            }
            if (!zero_fill && timeout > 0 && now_ms() - t0 > (double)timeout) {
                zero_fill = 1; /* "Reading is too slow. Skipping Range..." */
            }
        }
    }
    fclose(in);
    close(out);
    /* init returned 0: the module stays loaded. A pending SIGPIPE now. */
    sigprocmask(SIG_SETMASK, &old, NULL);
    return 0;
}
