/* The coverage example's program: `greet serve PORT` answers one client and exits, `greet ask HOST
 * PORT` asks and prints the answer. One program on two machines: the merged report shows lines hit
 * only by the server, only by the client, and their union. Built by build.sh with gcc --coverage. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(const char *what)
{
    perror(what);
    return 2;
}

static int serve(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0)
        return fail("bind");
    if (listen(s, 1) < 0)
        return fail("listen");
    int c = accept(s, NULL, NULL); /* server only */
    char name[64] = {0};
    ssize_t n = read(c, name, sizeof name - 1);
    if (n > 0 && name[n - 1] == '\n')
        name[n - 1] = 0;
    dprintf(c, "hello, %s\n", name); /* server only */
    close(c);
    close(s);
    return 0;
}

static int ask(const char *host, int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "greet: bad address %s\n", host);
        return 2;
    }
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) < 0)
        return fail("connect");
    dprintf(s, "client\n"); /* client only */
    char reply[128] = {0};
    ssize_t n = read(s, reply, sizeof reply - 1);
    if (n > 0)
        fputs(reply, stdout); /* client only */
    close(s);
    return n > 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "serve") == 0)
        return serve(atoi(argv[2]));
    if (argc == 4 && strcmp(argv[1], "ask") == 0)
        return ask(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: greet serve PORT | greet ask HOST PORT\n");
    return 2;
}
